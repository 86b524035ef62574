"""The launch probe (reference_worker/cuda/launch_probe.py): its arguments, its table and its
ctypes view of the driver's structures without a GPU; its kernels compiled by nvcc where there
is one; and, on a GPU, a small run whose chains, barriers and graph edges must check out."""
from __future__ import annotations

import ctypes
import shutil
import subprocess

import pytest

from reference_worker.cuda import cuda_unavailable_reason, launch_probe
from reference_worker.cuda.launch_probe import KERNEL_DIR, EdgeData, ProbeResult


def test_the_edge_structure_has_the_layout_of_cuda_h():
    # Size and offset printed by a C program built against CUDA 13.0's cuda.h (the same since 12.3);
    # the launch structures are test_driver_launch.py's.
    assert ctypes.sizeof(EdgeData) == 8 and EdgeData.type.offset == 2


def test_the_defaults_are_the_decode_step_of_issue_13():
    args = launch_probe.parse_args([])
    assert (args.nodes, args.barriers, args.work_kib, args.replays, args.step_ms) == (165, 150, 200.0, 20, 1.19)


@pytest.mark.parametrize("argv", [["--nodes", "1"], ["--nodes", "0"], ["--barriers", "-3"],
                                  ["--work-kib", "0"], ["--replays", "many"], ["--step-ms", "-1"]])
def test_bad_arguments_are_refused_with_a_message(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        launch_probe.parse_args(argv)
    assert stop.value.code == 2
    assert argv[0] in capsys.readouterr().err


def result(**changes) -> ProbeResult:
    figures = dict(
        device="GPU", driver_version=12080, nodes=165, barriers=150, barrier_blocks=132, work_bytes=207872,
        us_each={"empty": 2.0, "empty+gdc": 2.1, "empty+pdl": 1.2, "work": 5.0, "work+pdl": 4.0, "barrier": 1.5},
        failures={}, programmatic_edges={"empty": 0, "empty+gdc": 0, "empty+pdl": 164, "work": 0, "work+pdl": 164},
        chain_matches={"work": True, "work+pdl": True}, barrier_mismatches=0)
    return ProbeResult(**(figures | changes))


def table_rows(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0].split(":")[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_the_table_multiplies_each_figure_out_over_the_step():
    rows = table_rows(launch_probe.format_table(result(), step_ms=1.19))
    assert rows["empty"] == ["2.000", "330.0", "27.7%", ""]
    assert rows["empty+gdc"][3] == "-16.5 (vs empty)"  # the two instructions cost 0.1 us a node
    assert rows["empty+pdl"] == ["1.200", "198.0", "16.6%", "148.5 (vs empty+gdc)"]
    assert rows["work+pdl"][3] == "165.0 (vs work)"
    assert rows["barrier"] == ["1.500", "247.5", "20.8%", "82.5 (vs empty)"]


def test_the_table_names_the_work_size_and_the_checks():
    table = launch_probe.format_table(result(), step_ms=1.19)
    assert "reading 203 KiB (224 blocks)" in table and "132 blocks, one per SM" in table
    assert "Programmatic edges of 164 in each graph: empty 0, empty+gdc 0, empty+pdl 164" in table
    assert "NumPy's: work yes, work+pdl yes. Barrier mismatches: 0." in table
    assert result().passed


@pytest.mark.parametrize("changes", [{"chain_matches": {"work": True, "work+pdl": False}}, {"barrier_mismatches": 3}])
def test_a_failed_check_fails_the_probe_and_shows_in_the_table(changes):
    bad = result(**changes)
    assert not bad.passed
    table = launch_probe.format_table(bad, step_ms=1.19)
    assert "work+pdl NO" in table or "Barrier mismatches: 3." in table


def test_a_launch_mode_the_driver_refused_reads_not_measured_and_fails_the_probe():
    figures = result().us_each
    refused = result(us_each={k: v for k, v in figures.items() if k != "empty+pdl"},
                     failures={"empty+pdl": "cuLaunchKernelEx failed: CUDA_ERROR_NOT_SUPPORTED"})
    rows = table_rows(launch_probe.format_table(refused, step_ms=1.19))
    assert rows["empty+pdl"][0] == "not measured: cuLaunchKernelEx failed: CUDA_ERROR_NOT_SUPPORTED"
    assert rows["empty+gdc"][3] == "-16.5 (vs empty)"  # the other rows keep their figures
    assert not refused.passed


def test_edges_the_driver_cannot_report_read_unknown():
    table = launch_probe.format_table(result(programmatic_edges={"empty+pdl": None}), step_ms=1.0)
    assert "in each graph: empty+pdl unknown." in table


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed here")
def test_the_kernels_compile_for_sm_90(tmp_path):
    source = tmp_path / "launch_probe.cu"
    source.write_text(launch_probe.SOURCE)
    ptx = tmp_path / "launch_probe.ptx"
    subprocess.run(["nvcc", "-arch=sm_90", "-std=c++17", f"-I{KERNEL_DIR}", "--ptx", "-o", str(ptx), str(source)],
                   check=True, capture_output=True, timeout=120)
    assert ptx.read_text().count("griddepcontrol.wait") == 2  # empty_pdl and work


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="a GPU is here: the probe would run")
def test_without_a_gpu_the_probe_says_why_and_exits_1(capsys):
    assert launch_probe.main(["--nodes", "4"]) == 1
    assert capsys.readouterr().err.startswith("launch_probe: ")


@pytest.mark.cuda
def test_a_small_probe_checks_out_on_the_gpu():
    if (reason := cuda_unavailable_reason()) is not None:
        pytest.skip(f"CUDA backend unavailable: {reason}")
    probed = launch_probe.probe(nodes=8, barriers=20, work_kib=16, replays=3)
    assert probed.chain_matches == {"work": True, "work+pdl": True}
    assert probed.barrier_mismatches == 0
    # The capture recorded the attribute: every edge of a PDL graph programmatic, none elsewhere.
    assert probed.programmatic_edges == {"empty": 0, "empty+gdc": 0, "empty+pdl": 7, "work": 0, "work+pdl": 7}
    assert probed.failures == {}
    assert sorted(probed.us_each) == sorted([key for key, *_ in launch_probe.CASES] + [launch_probe.BARRIER])
    assert all(us > 0 for us in probed.us_each.values())
    assert probed.passed
