"""The GPU-less compile check of the Triton kernels (``gtl_kernels.triton.aot_check``) and its SASS reader
(``gtl_kernels.triton.sass``): one small kernel compiled for sm_90 by the real pipeline, so that the report parsers
cannot rot. The full check runs as ``make triton-aot-check`` and in CI (``.ci/run``, beside the suite)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RESOURCE_REPORT = """
Resource usage:
 Common:
  GLOBAL:11 CONSTANT[4]:8
 Function _chunk_race_kernel:
  REG:80 STACK:0 SHARED:1024 LOCAL:0 CONSTANT[0]:720 TEXTURE:0 SURFACE:0 SAMPLER:0
 Function other:
  REG:255 STACK:32 SHARED:0 LOCAL:8 CONSTANT[0]:720 TEXTURE:0 SURFACE:0 SAMPLER:0
"""

SASS = """
        Function : k
        .headerflags    @"EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   LDG.E.64 R2, desc[UR4][R2.64] ;
        /*0020*/               @P0 LDG.E.128 R4, desc[UR4][R6.64] ;
        /*0030*/                   FMNMX R8, R4, R5, !PT ;
        /*0040*/              @!P1 BRA 0x70 ;
        /*0050*/                   MUFU.LG2 R9, R8 ;
        /*0060*/                   FADD R9, R9, R9 ;
        /*0070*/                   MUFU.EX2 R10, R8 ;
        /*0080*/               @P2 BRA 0x20 ;
        /*0090*/                   EXIT ;
        /*00a0*/                   BRA 0xa0;
"""


def test_resource_report_parser():
    from gtl_kernels.triton.aot_check import parse_resource_usage

    usage = parse_resource_usage(RESOURCE_REPORT)
    assert usage["_chunk_race_kernel"] == {"REG": 80, "STACK": 0, "SHARED": 1024, "LOCAL": 0, "CONSTANT[0]": 720,
                                           "TEXTURE": 0, "SURFACE": 0, "SAMPLER": 0}
    assert usage["other"]["STACK"] == 32 and usage["other"]["LOCAL"] == 8
    with pytest.raises(ValueError):
        parse_resource_usage("no functions here")


def test_result_problems():
    from gtl_kernels.triton.aot_check import ARCHS, Result

    ok = Result("k", "", 90, 1, "", 0.0, regs=80, shared=ARCHS[90]["shared_limit"])
    assert ok.problems() == []
    assert Result("k", "", 80, 1, "", 0.0, shared=ARCHS[80]["shared_limit"] + 1).problems()
    assert Result("k", "", 90, 1, "", 0.0, stack=8).problems()
    assert Result("k", "", 90, 1, "", 0.0, local=4).problems()
    assert Result("k", "", 90, 1, "", 0.0, error="boom").problems()


def test_sass_loop_reader():
    from gtl_kernels.triton import sass

    (instrs,) = sass.parse_sass(SASS).values()
    assert [i.op for i in instrs][:3] == ["MOV", "LDG.E.64", "LDG.E.128"] and instrs[2].pred == "@P0"
    assert sass.hot_loop(instrs) == (0x20, 0x80)
    assert sass.optional_regions(instrs, 0x20, 0x80) == [(0x41, 0x6F)]
    cost = sass.loop_cost("k", instrs, per_thread=2)
    # hot path: the optional region holds no MUFU.EX2, so it is left out (LDG, FMNMX, BRA, MUFU.EX2, BRA)
    assert sum(cost.hot.values()) == 5 and sum(cost.body.values()) == 7
    s = cost.summary()
    assert s["instr_hot"] == 2.5 and s["loads_per_element"] == 0.5 and s["load_ops"] == "1 LDG.E.128"
    assert s["ex2"] == 0.5 and s["other_mufu"] == "none"
    assert sass.load_bytes("LDG.E.128") == 16 and sass.load_bytes("LDG.E.U16") == 2 and sass.load_bytes("LDG.E") == 4


_COMPILE_ONE = """
import json
from gtl_kernels.triton import aot_check, sass
case = aot_check.Case("guided_log_softmax", 64, 4096, "bfloat16")
with aot_check.fresh_cache():
    (la,) = [la for la in aot_check.record(90, [case]) if la.name == "_stats_kernel"]
    aot_check._LAUNCHES[:] = [(90, la)]
    res, text = aot_check.compile_launch(0, keep_sass=True)
(instrs,) = sass.parse_sass(text).values()
cost = sass.loop_cost(la.name, instrs, 4096 / (32 * la.options["num_warps"]))
print(json.dumps(dict(result=res.__dict__, config=la.config(), loop=cost.summary())))
"""


def _nvidia_tools() -> list[str]:
    try:
        from gtl_kernels.triton.aot_check import tool
    except Exception as exc:  # pragma: no cover - no Triton
        return [f"triton: {exc}"]
    return [name for name in ("ptxas", "cuobjdump") if not os.path.exists(tool(name))]


@pytest.mark.skipif(bool(_nvidia_tools()), reason=f"the Triton wheel lacks its CUDA binaries: {_nvidia_tools()}")
def test_one_kernel_through_the_compiler_sm90():
    """``_stats_kernel`` (the statistics pass of ``guided_log_softmax``), bf16 rows of 4096 tokens, compiled for
    sm_90 in a process without ``TRITON_INTERPRET``: the resource report is read, and the SASS loop shows what the
    kernel must do per element (two 16-byte loads for 16 bf16 elements per thread, one exponential each)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", _COMPILE_ONE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    res, loop = got["result"], got["loop"]
    assert res["error"] == "" and res["arch"] == 90 and res["warps"] == 8
    assert "BLOCK=4096" in got["config"] and "logits bf16" in got["config"]
    assert 16 <= res["regs"] <= 255 and res["stack"] == 0 and res["local"] == 0
    assert 0 <= res["shared"] <= 227 * 1024
    assert loop["elements_per_thread"] == 16
    assert loop["load_ops"] == "2 LDG.E.128" and loop["loads_per_element"] == 0.125
    assert loop["ex2"] == 1.0
    assert 2 <= loop["instr_hot"] <= loop["instr_body"] < 100


def test_shared_plan_claims_and_merge(tmp_path):
    """--claim: each launch goes to the first process that claims it; --merge: the parts in plan order, and a refusal
    when they miss a launch, repeat one or were planned differently."""
    from gtl_kernels.triton.aot_check import Result, _claim, merge

    claims = tmp_path / "claims"
    claims.mkdir()
    assert _claim(str(claims), 3) and not _claim(str(claims), 3) and _claim(str(claims), 4)

    def part(name, indices, fingerprint="f", planned=3):
        results = {str(i): Result(f"k{i}", "", 90, 1, "", 0.0, regs=10 + i).__dict__ for i in indices}
        path = tmp_path / name
        path.write_text(json.dumps({"fingerprint": fingerprint, "planned": planned, "seconds": 1.0 + len(indices),
                                    "results": results}))
        return str(path)

    results, seconds = merge([part("a", [2, 0]), part("b", [1])])
    assert [r.kernel for r in results] == ["k0", "k1", "k2"] and seconds == 3.0
    for bad in ([part("c", [0]), part("d", [1])],  # launch 2 compiled by nobody
                [part("e", [0, 1]), part("f", [1, 2])],  # launch 1 twice
                [part("g", [0, 1]), part("h", [2], fingerprint="other")]):
        with pytest.raises(SystemExit):
            merge(bad)
