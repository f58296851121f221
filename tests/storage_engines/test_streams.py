"""ByteStream: reads of any size over chunks of any size give the bytes back in order."""

import random

import pytest

from storage_engines.streams import ByteStream


def cut(data: bytes, rng: random.Random) -> list[bytes]:
    points = sorted(rng.sample(range(len(data) + 1), min(len(data), rng.randint(0, 8))))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("seed", range(200))
def test_mixed_reads_and_iteration_return_every_byte_once(seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(0, 5000))
    stream = ByteStream(cut(data, rng))
    out: list[bytes] = []
    while True:
        choice = rng.random()
        if choice < 0.05:
            out.extend(stream)  # iteration takes what reads left of a chunk first
            break
        if choice < 0.1:
            out.append(stream.read())
            break
        size = rng.randint(1, 1500)
        piece = stream.read(size)
        assert len(piece) <= size
        if not piece:
            break
        out.append(piece)
    assert b"".join(out) == data


def test_small_reads_of_a_big_chunk_keep_the_chunk_instead_of_copying_its_rest() -> None:
    chunk = bytes(range(256)) * 4096  # 1 MiB
    stream = ByteStream([chunk])

    pieces = [stream.read(16384)]
    assert stream._buffer is chunk, "the rest is the chunk itself, read from an offset"
    pieces += [stream.read(16384) for _ in range(63)]

    assert b"".join(pieces) == chunk
    assert stream.read(1) == b""
