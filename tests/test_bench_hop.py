"""`tokcom bench`'s hop figure end to end on small messages: the real sinks (a TokenLink server that
decodes with the codec and a raw-bytes gRPC sink on one server, a raw TCP sink), the real client in
both orders, and the table."""
import json
import threading

import pytest

from launch import bench, bench_roles
from protos.rpc import start_server


def test_hop_client_times_both_paths_both_ways_and_the_table_reports_the_worse(tmp_path):
    server = start_server(bench_roles._add_sinks, "127.0.0.1:0", bench_roles.MAX_MB, workers=4, credential=None)
    port_file = tmp_path / "tcp.port"
    threading.Thread(target=bench_roles.sink_tcp, args=(str(port_file),), daemon=True).start()
    for _ in range(200):
        if port_file.exists():
            break
        threading.Event().wait(0.05)
    try:
        out = tmp_path / "hop.json"
        bench_roles.client(f"127.0.0.1:{server.port}", f"127.0.0.1:{port_file.read_text()}", [1, 2], 2, str(out))
    finally:
        server.stop()
    results = json.loads(out.read_text())
    assert set(results) == {"sequential", "alternating"}
    for mode in results.values():
        for kind in ("grpc", "raw", "tcp"):
            for size, mb in (("1", 1), ("2", 2)):
                r = mode[kind][size]
                assert 0 < r["best_ms"] <= r["median_ms"]
                assert abs(r["mb_per_s"] - (mb << 20) / 1e6 / (r["median_ms"] / 1e3)) < 1e-6 * r["mb_per_s"]
    rows = bench.hop_rows(results, (1, 2))
    for size, row in rows.items():
        ratios = [row[m]["hop_over_tcp"] for m in ("sequential", "alternating")]
        assert row["hop_over_tcp"] == min(ratios)
        for mode in ("sequential", "alternating"):
            tcp_ms = results[mode]["tcp"][size]["median_ms"]
            assert row[mode]["hop_over_tcp"] == pytest.approx(tcp_ms / results[mode]["grpc"][size]["median_ms"])
            assert row[mode]["raw_over_tcp"] == pytest.approx(tcp_ms / results[mode]["raw"][size]["median_ms"])
    text = bench.table({"hop": rows})
    assert text.count("one hop") == 2 and "back to back" in text and "alternating" in text
