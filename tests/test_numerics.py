"""Portable CPU numerics: the same bits on every x86-64 CPU with AVX2 and FMA, for any thread count; what auto
picks; and dnsd info --check-numerics against the shipped reference."""
import json
import os
import platform
from pathlib import Path

import numpy as np
import paddle
import pytest

from DNSD import info as reference_bits
from DNSD.errors import InputError
from DNSD.models.batch_norm import BatchNorm2D, portable_batch_norm, use_portable_batch_norm
from DNSD.system import numerics
from DNSD.system.numerics import PORTABLE_ENVIRONMENT, configure_numerics, cpuinfo_fields, numerics_in_effect
from helpers import assert_one_line_error, dnsd, read_json

CAPABLE = set(numerics.REQUIRED_FLAGS) <= set(cpuinfo_fields().get("flags", "").split())
needs_avx2 = pytest.mark.skipif(not CAPABLE, reason="this CPU lacks AVX2 or FMA, which portable numerics need")


def cpuinfo(tmp_path, vendor, flags="fpu sse2 avx avx2 fma"):
    path = tmp_path / vendor
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: {flags}\n\nprocessor\t: 1\nvendor_id\t: x\n")
    return str(path)


@pytest.fixture
def no_mkl_variables(monkeypatch):
    for key in PORTABLE_ENVIRONMENT:
        monkeypatch.delenv(key, raising=False)
    yield
    use_portable_batch_norm(True)


@pytest.mark.parametrize("vendor", ["GenuineIntel", "AuthenticAMD"])
def test_portable_numerics_pin_mkl_to_one_path_on_either_vendor(tmp_path, no_mkl_variables, vendor):
    in_effect = configure_numerics("portable", cpuinfo(tmp_path, vendor))
    assert in_effect == {"cpu_numerics": "portable", "MKL_DEBUG_CPU_TYPE": "5", "MKL_CBWR": "AVX2,STRICT"}
    assert os.environ["MKL_CBWR"] == "AVX2,STRICT" and portable_batch_norm()


def test_native_numerics_keep_only_amds_fast_mkl_path(tmp_path, no_mkl_variables):
    assert configure_numerics("native", cpuinfo(tmp_path, "GenuineIntel"))["MKL_DEBUG_CPU_TYPE"] is None
    assert configure_numerics("native", cpuinfo(tmp_path, "AuthenticAMD")) == {
        "cpu_numerics": "native", "MKL_DEBUG_CPU_TYPE": "5", "MKL_CBWR": None}
    assert "MKL_CBWR" not in os.environ and not portable_batch_norm()


def test_onednn_numerics_on_a_cpu_without_avx2_are_refused_before_anything_is_built(tmp_path, no_mkl_variables,
                                                                                     monkeypatch):
    monkeypatch.setattr(numerics, "use_cpu_operators", lambda *_: pytest.fail("the operators were built"))
    with pytest.raises(InputError, match="this CPU lacks; pass --cpu-numerics portable"):
        configure_numerics("onednn", cpuinfo(tmp_path, "GenuineIntel", "fpu sse2 avx"))


@pytest.fixture
def operators_asked(monkeypatch):
    """The enabled argument of each use_cpu_operators call configure_numerics makes, the operators left unbuilt."""
    calls = []
    monkeypatch.setattr(numerics, "use_cpu_operators", lambda enabled, threads: calls.append(enabled))
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    return calls


def test_auto_numerics_run_dnsds_operators_where_they_build(tmp_path, no_mkl_variables, operators_asked, monkeypatch,
                                                             capsys):
    monkeypatch.setattr(numerics, "load_operators", lambda: "built")
    configure_numerics("auto", cpuinfo(tmp_path, "AuthenticAMD"))
    assert operators_asked == [True] and capsys.readouterr().err == ""


def test_auto_numerics_are_portable_where_the_operators_do_not_build_and_say_why_in_one_line(
        tmp_path, no_mkl_variables, operators_asked, monkeypatch, capsys):
    def no_compiler():
        raise InputError("DNSD's CPU operators are compiled on first use, and no C++ compiler was found (g++)")

    monkeypatch.setattr(numerics, "load_operators", no_compiler)
    assert configure_numerics("auto", cpuinfo(tmp_path, "GenuineIntel"))["cpu_numerics"] == "portable"
    assert operators_asked == [False] and os.environ["MKL_CBWR"] == "AVX2,STRICT" and portable_batch_norm()
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("DNSD: portable CPU numerics, at half the speed of DNSD's CPU operators: ")
    assert line.endswith("no C++ compiler was found (g++)")


def test_auto_numerics_on_a_cpu_without_avx2_build_nothing_and_say_nothing(tmp_path, no_mkl_variables, operators_asked,
                                                                           monkeypatch, capsys):
    monkeypatch.setattr(numerics, "load_operators", lambda: pytest.fail("the operators were built"))
    configure_numerics("auto", cpuinfo(tmp_path, "GenuineIntel", "fpu sse2 avx"))
    assert operators_asked == [False] and capsys.readouterr().err == ""


def test_a_users_mkl_variable_or_a_cpu_without_avx2_makes_the_numerics_custom(tmp_path, no_mkl_variables,
                                                                                 monkeypatch):
    assert configure_numerics("portable", cpuinfo(tmp_path, "GenuineIntel", "fpu sse2 avx"))["cpu_numerics"] == \
        "custom"
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "4")
    in_effect = configure_numerics("portable", cpuinfo(tmp_path, "AuthenticAMD"))
    assert in_effect["cpu_numerics"] == "custom" and in_effect["MKL_DEBUG_CPU_TYPE"] == "4"
    monkeypatch.setenv("MKL_DEBUG_CPU_TYPE", "5")
    monkeypatch.setenv("FLAGS_use_mkldnn", "1")
    assert numerics_in_effect(cpuinfo(tmp_path, "AuthenticAMD"))["cpu_numerics"] == "custom"


@pytest.mark.parametrize("training", [True, False])
def test_portable_batch_norm_is_paddles_function_with_its_statistics(training):
    rng = np.random.default_rng(0)
    x = paddle.to_tensor(rng.standard_normal((8, 4, 5, 5), dtype=np.float32) * 3 + 1, stop_gradient=False)
    weight = rng.random(4, dtype=np.float32) + 0.5
    outputs = []
    for portable in (True, False):
        use_portable_batch_norm(portable)
        layer = BatchNorm2D(4)
        layer.weight.set_value(weight)
        layer._variance.set_value(np.full(4, 2.0, np.float32))
        layer.train() if training else layer.eval()
        y = layer(x)
        (y * y).sum().backward()
        outputs.append([y.numpy(), x.grad.numpy(), layer.weight.grad.numpy(), layer._mean.numpy(),
                        layer._variance.numpy()])
        x.clear_gradient()
    use_portable_batch_norm(True)
    for portable, paddles in zip(*outputs):
        assert portable.dtype == np.float32 and np.allclose(portable, paddles, rtol=1e-5, atol=1e-5)
    assert np.abs(outputs[0][3]).min() > 0.01 if training else np.array_equal(outputs[0][3], np.zeros(4))


@needs_avx2
def test_this_machine_computes_the_reference_bits():
    result = dnsd("info", "--check-numerics", "--device", "cpu", "--cpu-numerics", "portable")
    assert result.returncode == 0, result.stderr
    assert "CPU numerics:         portable (MKL_DEBUG_CPU_TYPE=5, MKL_CBWR=AVX2,STRICT)" in result.stdout
    assert "this machine computes the reference bits" in result.stdout
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    named = f"{fields['vendor_id']}, family {fields['cpu family']} model {fields['model']}"
    # What a bug report or a mismatch needs: the machine's own CPU, in the info lines and beside the verdict.
    assert f"processor:            {fields['model name']} ({named}; avx2 fma" in result.stdout
    assert f"this machine: {fields['model name']} ({named}; avx2 fma" in result.stdout


@needs_avx2
def test_the_bits_do_not_depend_on_the_number_of_threads():
    digests = []
    for threads in (1, 2):
        paddle.base.core.set_num_threads(threads)
        digests.append(reference_bits.step_digests())
    assert digests[0] == digests[1] == reference_bits.reference("portable")["digests"]


def test_other_bits_are_named_with_the_step_they_part_at_and_exit_4(tmp_path, monkeypatch):
    shipped = read_json(reference_bits.REFERENCE)
    known = shipped["references"]["portable"]
    known["digests"] = known["digests"][:2] + ["0" * 64] * (reference_bits.STEPS - 2)
    known["computed_on"] = ["a machine of the test"]
    crafted = tmp_path / "reference.json"
    crafted.write_text(json.dumps(shipped))
    monkeypatch.setattr(reference_bits, "REFERENCE", str(crafted))
    result = dnsd("info", "--check-numerics", "--device", "cpu", "--cpu-numerics", "portable")
    assert result.returncode == 4, result.stderr
    assert "differ from the reference from step 3 of 4 (the reference: a machine of the test)" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "DNSD: numerics differ: this CPU computes other bits than the reference machines (docs/reproducing.md)"]


def test_native_numerics_have_no_reference_to_check():
    result = dnsd("info", "--check-numerics", "--device", "cpu", "--cpu-numerics", "native")
    assert_one_line_error(result, "reference bits of portable and onednn CPU numerics only",
                          "leave out --cpu-numerics native")
