"""`tokcom bench`'s floor: a round's bytes as raw gRPC through real edge, relay and device processes.

The edge counts every byte that reaches it; the count must equal the bytes the round's shapes
imply (b * s * d * 4 per device, in parts of wire.part_kb, each message with its 2-byte head),
computed here from the config, not taken from the floor's own code."""
import json
import math

from launch import bench, bench_floor


def test_tensor_messages_cut_at_the_part_size_and_keep_every_byte():
    msgs = bench_floor.tensor_messages(2, 10, 4)
    assert [m[:2] for m in msgs] == [b"P\x02", b"P\x02", b"L\x02"]
    assert sum(len(m) - 2 for m in msgs) == 10
    assert bench_floor.tensor_messages(0, 4, 4) == [b"L\x00" + bytes(4)]  # no larger than a part: one message


def test_floor_round_carries_exactly_the_rounds_bytes_through_real_processes(tmp_path):
    rounds, width, part_kb = 6, 16, 8
    overrides = [f"wire.part_kb={part_kb}", "transmitter.audio.tokens=64"]  # audio: 8*64*16*4 = 32 KiB, 4 parts
    res = bench.floor(bench._sets(overrides), tmp_path, rounds, width, "t")
    data = json.loads((tmp_path / "floor-t.json").read_text())
    from configs.loader import load_config
    cfg = load_config(None, overrides)
    b = cfg.train.stage1.batch
    tokens = {"audio": 64, "video": cfg.transmitter.video.tokens, "text": cfg.data.text_len}
    expect = 3 * 2  # the devices' hellos
    for m, s in tokens.items():
        nbytes = b * s * width * 4
        assert data["bytes_per_round"][m] == nbytes
        expect += rounds * (nbytes + 2 * max(1, math.ceil(nbytes / (part_kb << 10))))
    assert data["edge_received_bytes"] == expect
    assert len(data["rounds"]) == rounds and res["rounds"] == rounds - 3
    assert 0 < res["round_ms_median"] and res["part_bytes"] == part_kb << 10
