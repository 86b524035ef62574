"""The speed benchmark's parts that need no GPU: its arguments, the issue table and its JSON from
given figures, and starting, measuring and stopping servers over HTTP (this worker on NumPy, a
stand-in for llama-server)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from reference_worker import hop_bench, http_bench
from reference_worker.cuda import bench

FAKE_LLAMA_SERVER = Path(__file__).parent / "doubles" / "fake_llama_server.py"

FIGURES = {
    "model": "m", "quant_kind": "Q4_K_M", "device": "H200", "short_prompt_tokens": 7, "first_token_short_ms": 6.6,
    "prefill_tokens": 512, "prefill_ms": 32.0, "decode_tps": 900.0, "decode_runs_tps": [900.0],
    "mib_per_token": 373.0, "bandwidth_gbs": 352.0, "peak_bandwidth_gbs": 4800.0,
    "llama_bench_tps": {"pp512 fa=0": 32000.0, "tg128 fa=0": 800.0, "pp512 fa=1": 40000.0, "tg128 fa=1": 1000.0},
    "filtered_sampling_us": 30.0,
    "http": {"worker": {"first_token_short_ms": 10.0, "first_token_long_ms": 40.0, "decode_tps": 850.0},
             "llama_server": {"first_token_short_ms": 5.0, "first_token_long_ms": 20.0, "decode_tps": 680.0}},
}


def test_the_pdl_comparison_needs_a_model(capsys):
    with pytest.raises(SystemExit) as stop:
        bench.main(["--kernels", "--pdl-ab"])
    assert stop.value.code == 2 and "--pdl-ab needs --model PATH" in capsys.readouterr().err


def rows_by_measure(figures: dict) -> dict[str, dict]:
    return {row["measure"].split(" (")[0]: row for row in bench.issue_table(figures)}


def test_the_issue_table_divides_rates_and_inverts_times():
    rows = rows_by_measure(FIGURES)
    assert rows["decode, batch 1"]["ratio"] == pytest.approx({"fa off": 1.125, "fa on": 0.9})
    assert rows["prefill, 512 tokens"]["worker"] == pytest.approx(16000.0)
    assert rows["prefill, 512 tokens"]["ratio"] == pytest.approx({"fa off": 0.5, "fa on": 0.4})
    assert rows["over HTTP: first token, short prompt"]["ratio"] == pytest.approx(0.5)  # twice as slow
    assert rows["over HTTP: first token, ~500-token prompt"]["ratio"] == pytest.approx(0.5)
    assert rows["over HTTP: decode"]["ratio"] == pytest.approx(850 / 680)
    assert rows[f"sampling: {bench.FILTERED_SAMPLING}"]["worker"] == 30.0
    assert "7% of 4800 GB/s" in next(r["measure"] for r in bench.issue_table(FIGURES) if r["unit"] == "GB/s")


def test_measures_not_taken_stay_empty_in_the_table():
    figures = {**FIGURES, "llama_bench_tps": {}, "http": {"worker": FIGURES["http"]["worker"]},
               "peak_bandwidth_gbs": None}
    rows = rows_by_measure(figures)
    assert rows["decode, batch 1"]["llama_cpp"] is None and rows["decode, batch 1"]["ratio"] is None
    assert rows["over HTTP: decode"]["worker"] == 850.0 and rows["over HTTP: decode"]["ratio"] is None
    table = bench.issue_markdown(bench.issue_table(figures), "title")
    assert "| over HTTP: decode (tokens/s) | 850.0 |  |  |" in table
    assert "| bandwidth in decode (373 MiB a token) (GB/s) | 352.0 |  |  |" in table
    json.dumps(bench.issue_table(figures))  # the --json record holds the rows as they are


def test_the_table_prints_both_flash_attention_settings():
    table = bench.issue_markdown(bench.issue_table(FIGURES), "title")
    assert "| decode, batch 1 (tokens/s) | 900.0 | 800.0 (fa off) / 1000.0 (fa on) | 1.12 (fa off) / 0.90 (fa on) |" \
        in table


def test_a_server_that_exits_while_starting_is_reported_with_its_output():
    command = [sys.executable, "-c", "print('no such model'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError, match="exited with 3(.|\n)*no such model"):
        with http_bench.launched(command, f"http://127.0.0.1:{http_bench.free_port()}", timeout_s=30):
            pass


@pytest.fixture
def fake_llama_server(tmp_path: Path) -> Path:
    """An executable that starts the stand-in, as a llama-server binary would be given."""
    binary = tmp_path / "llama-server"
    binary.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE_LLAMA_SERVER} \"$@\"\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def test_compare_starts_each_server_measures_it_and_stops_it(fake_llama_server, synthetic_model, tmp_path,
                                                             monkeypatch):
    argv_file = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_LLAMA_ARGV", str(argv_file))
    results = http_bench.compare(str(synthetic_model), "Write a haiku", "The quick brown fox " * 20, decode_tokens=6,
                                 runs=1, llama_server=str(fake_llama_server), backend="numpy")
    assert set(results) == {"worker", "llama_server"}
    for figures in results.values():
        assert figures["first_token_short_ms"] > 0 and figures["first_token_long_ms"] > 0
        assert figures["decode_tps"] > 0
    argv = json.loads(argv_file.read_text())
    assert argv[:2] == ["-m", str(synthetic_model)] and argv[-4:] == list(http_bench.LLAMA_SERVER_ARGS)
    port = int(argv[argv.index("--port") + 1])
    assert not http_bench._healthy(f"http://127.0.0.1:{port}"), "the stand-in was left running"


def test_hop_bench_stamps_every_hop_of_a_request_in_order(synthetic_model):
    # In a child process: hop_bench wraps the server's functions for good.
    out = subprocess.run([sys.executable, "-m", "reference_worker.hop_bench", "--model", str(synthetic_model),
                          "--runs", "2"], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row[0].lstrip("| ") for row in rows] == hop_bench.HOPS[1:]  # "client sent" is the origin
    assert all(float(row[3].rstrip(" |")) > 0 for row in rows)
