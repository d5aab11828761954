"""Replay memories in checkpoints (run-directory format 3): their arrays go to segments shared by checkpoints, each
save writes only the chunks written since the last, and a memory loaded from them goes on exactly as the saved one."""

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rlkube.chunked import MIN_CHUNK_ROWS, ArrayChunks, Chunks, chunk_rows_for
from rlkube.rl.replay import PrioritizedReplayMemory, ReplayMemory
from rlkube.rundir import checkpoint, layout
from tests.test_memory import stacked_frame_transitions

FRAMES = (5, 6, 4)  # small stacks of 4 frames, channels last, as Atari's are
CAPACITY = 8 * MIN_CHUNK_ROWS  # 8 chunks


def make_memory(cls: type[ReplayMemory], stacked: bool) -> ReplayMemory:
    return cls(CAPACITY, FRAMES, np.uint8, (), np.int64, seed=0, frame_axis=-1 if stacked else None)


def add(memories: list[ReplayMemory], transitions: list[tuple[int, Any]]) -> None:
    for memory in memories:
        for stream, transition in transitions:
            memory.add(*transition, stream=stream)


def save(directory: Path, step: int, memory: ReplayMemory) -> Path:
    return checkpoint.save(directory, step, {"agent": {"memory": {"replay": memory.state_dict()}}})


def loaded(path: Path, cls: type[ReplayMemory], stacked: bool) -> ReplayMemory:
    memory = make_memory(cls, stacked)
    memory.load_state_dict(checkpoint.load(path)["agent"]["memory"]["replay"])
    return memory


def rows(chunks: Chunks) -> np.ndarray:
    return np.concatenate([chunks.chunk(index) for index in range(chunks.count)])


def assert_same_memory_state(actual: dict[str, Any], expected: dict[str, Any], where: str = "memory") -> None:
    assert actual.keys() == expected.keys(), where
    for key, value in expected.items():
        if isinstance(value, Chunks):
            np.testing.assert_array_equal(rows(actual[key]), rows(value), err_msg=f"{where}[{key}]", strict=True)
            np.testing.assert_array_equal(actual[key].versions, value.versions, err_msg=f"{where}[{key}] versions")
        elif isinstance(value, dict):
            assert_same_memory_state(actual[key], value, f"{where}[{key}]")
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(actual[key], value, err_msg=f"{where}[{key}]", strict=True)
        else:
            assert repr(actual[key]) == repr(value), f"{where}[{key}]"


def segments_of(path: Path) -> dict[str, int]:
    return layout.read_marker(path).segments


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked-frames", "whole-observations"])
@pytest.mark.parametrize("cls", [ReplayMemory, PrioritizedReplayMemory])
def test_a_memory_resumed_from_segments_goes_on_exactly_as_the_saved_one(cls: type[ReplayMemory], stacked: bool,
                                                                         tmp_path: Path) -> None:
    transitions = list(stacked_frame_transitions(streams=3, steps=1400, n_step=3))
    assert len(transitions) > 1.5 * CAPACITY  # the ring wraps before the last save
    memory = make_memory(cls, stacked)
    add([memory], transitions[:1500])
    save(tmp_path, 1, memory)
    add([memory], transitions[1500:2600])
    if cls is PrioritizedReplayMemory:
        sample = memory.sample(16)
        memory.update_priorities(sample["indices"], np.arange(16.0))
    resumed = loaded(save(tmp_path, 2, memory), cls, stacked)
    assert_same_memory_state(resumed.state_dict(), memory.state_dict())

    add([memory, resumed], transitions[2600:])  # streams go on from the stacks they were at
    assert_same_memory_state(resumed.state_dict(), memory.state_dict())
    expected, got = memory.sample(32, count=3), resumed.sample(32, count=3)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key, strict=True)
    # The resumed memory's next checkpoint is the one the saved memory would have written: the same chunks kept from
    # checkpoint 2, the same written anew.
    shutil.copytree(tmp_path, tmp_path / "resumed")
    shutil.copytree(tmp_path, tmp_path / "saved", ignore=shutil.ignore_patterns("resumed"))
    listed = {run: segments_of(save(tmp_path / run, 3, saved))
              for run, saved in (("resumed", resumed), ("saved", memory))}
    before = segments_of(tmp_path / "ckpt-2")
    assert listed["resumed"].keys() & before.keys() == listed["saved"].keys() & before.keys() != set()
    assert {layout.segment_identity(name) for name in listed["resumed"]} == \
        {layout.segment_identity(name) for name in listed["saved"]}


def written_rows(new_segments: set[str]) -> dict[str, int]:
    """Rows written per array by segments (their names say which rows)."""
    written: dict[str, int] = {}
    for name in new_segments:
        key, start, stop, _ = layout.segment_identity(name)
        written[key] = written.get(key, 0) + stop - start
    return written


def test_a_periodic_checkpoint_writes_about_what_was_added_since_the_last(tmp_path: Path) -> None:
    capacity = 64 * 1024
    chunk = chunk_rows_for(capacity)
    memory = ReplayMemory(capacity, FRAMES, np.uint8, (), np.int64, seed=0, frame_axis=-1)
    transitions = list(stacked_frame_transitions(streams=2, steps=9000, n_step=1))
    add([memory], transitions[:20_000])
    first = segments_of(save(tmp_path, 1, memory))
    added = 3000
    add([memory], transitions[20_000:20_000 + added])
    second_path = save(tmp_path, 2, memory)
    second = segments_of(second_path)
    new = second.keys() - first.keys()
    # Every per-slot array: the slots added, plus at most the rest of the chunks at either end.
    slot_arrays = {key: rows for key, rows in written_rows(new).items() if not key.endswith("frames")}
    assert set(slot_arrays) == {f"agent.memory.replay.{key}" for key in
                                ("action", "reward", "discount", "observations.obs_ids", "observations.next_ids")}
    assert all(added <= rows <= added + 2 * chunk for rows in slot_arrays.values()), slot_arrays
    # The frame pool: the new frames (about one a transition, more at episode starts), as many chunks again at most.
    new_frames = memory.observations.used - len(rows_of_first_frames(tmp_path / "ckpt-1"))
    assert written_rows(new)["agent.memory.replay.observations.frames"] <= new_frames + 2 * chunk
    # And nothing of the old: the state file holds no rows, only where they are.
    assert (second_path / layout.STATE_FILE).stat().st_size < 2**20
    assert sum(second[name] for name in new) < 0.25 * sum(second.values())


def rows_of_first_frames(path: Path) -> Chunks:
    return checkpoint.load(path)["agent"]["memory"]["replay"]["observations"]["frames"]


def test_segments_no_kept_checkpoint_lists_are_deleted_and_kept_ones_stay(tmp_path: Path) -> None:
    memory = make_memory(ReplayMemory, stacked=True)
    transitions = list(stacked_frame_transitions(streams=1, steps=2000, n_step=1))
    (tmp_path / layout.SEGMENTS).mkdir(parents=True)
    leftover = tmp_path / layout.SEGMENTS / layout.segment_name("agent.memory.replay.action", 0, 256, 7, "dead")
    leftover.write_bytes(b"a killed save's segment")
    for step, start in enumerate(range(0, 4 * CAPACITY, CAPACITY // 2), start=1):
        add([memory], transitions[start:start + CAPACITY // 2])
        save(tmp_path, step, memory)
    kept = [path for _, path in layout.complete_checkpoints(tmp_path)]
    assert [path.name for path in kept] == ["ckpt-7", "ckpt-8"]
    listed = set().union(*(segments_of(path) for path in kept))
    assert {path.name for path in (tmp_path / layout.SEGMENTS).iterdir()} == listed
    assert not leftover.exists()


def test_a_checkpoint_missing_a_segment_is_not_complete(tmp_path: Path) -> None:
    memory = make_memory(ReplayMemory, stacked=False)
    add([memory], list(stacked_frame_transitions(streams=1, steps=100, n_step=1)))
    first = save(tmp_path, 1, memory)
    marker = json.loads((first / layout.COMPLETE_MARKER).read_text())
    assert marker["format"] == layout.FORMAT
    assert marker["segments"]
    (tmp_path / layout.SEGMENTS / next(iter(marker["segments"]))).unlink()
    assert checkpoint.latest(tmp_path) is None


def test_chunks_in_memory_are_views_and_their_versions_copies() -> None:
    memory = make_memory(ReplayMemory, stacked=False)
    add([memory], list(stacked_frame_transitions(streams=1, steps=10, n_step=1)))
    state = memory.state_dict()["reward"]
    assert isinstance(state, ArrayChunks)
    assert np.shares_memory(state.array, memory.data["reward"])
    assert not np.shares_memory(state.versions, memory.slot_versions.versions)
