"""Where a train step's time goes (clever_jax.perf.profile)."""

import json

import pytest

from clever_jax.perf import profile
from configs import demo

HLO = """HloModule m

%fused_dot (p0: f32[2,2], p1: f32[2,2]) -> f32[2,2] {
  %p0 = f32[2,2] parameter(0)
  %p1 = f32[2,2] parameter(1)
  ROOT %dot.1 = f32[2,2] dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_norm (p0: f32[2,2]) -> f32[2] {
  %p0 = f32[2,2] parameter(0)
  %c = f32[] constant(0)
  ROOT %reduce.1 = f32[2] reduce(%p0, %c), dimensions={1}, to_apply=%add
}

ENTRY %main (a: f32[2,2]) -> f32[2,2] {
  %a = f32[2,2] parameter(0)
  %ynn_fusion.3 = f32[2,2] fusion(%a, %a), kind=kCustom, calls=%fused_dot
  %wrapped_reduce = f32[2] fusion(%ynn_fusion.3), kind=kLoop, calls=%fused_norm
  %copy.2 = f32[2,2] copy(%ynn_fusion.3)
  %tanh.1 = f32[2,2] tanh(%copy.2)
  ROOT %gather.5 = f32[2,2] gather(%tanh.1, %a), offset_dims={1}
}
"""


def test_instructions_are_sorted_into_kinds():
    kinds = profile.instruction_kinds(HLO)
    assert kinds["ynn_fusion.3"] == "matmul" and kinds["wrapped_reduce"] == "reduce"
    assert kinds["copy.2"] == "copy" and kinds["tanh.1"] == "elementwise" and kinds["gather.5"] == "gather/scatter"


@pytest.mark.slow  # A traced tiny train step.
def test_profile_sums_the_traced_steps_by_kind(tmp_path):
    config = demo.get_config("tiny")
    config.data.packing = True
    result = profile.profile(config, str(tmp_path), steps=2)
    json.dumps(result)
    by_kind = result["seconds_per_step"]
    assert set(by_kind) == set(profile.KINDS) and by_kind["matmul"] > 0 and by_kind["elementwise"] > 0
    assert result["total_s"] == pytest.approx(sum(by_kind.values())) and len(result["step_s"]) == 2
    # The operations ran inside the steps (on 2 cores some overlap: at most twice the wall time).
    assert 0 < result["total_s"] < 2 * max(result["step_s"]) and result["packing"]
    assert result["longest"][0]["seconds"] >= result["longest"][-1]["seconds"] > 0
    assert any(line.startswith("  matmul") for line in profile.table(result))
