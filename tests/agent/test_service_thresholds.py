"""The thresholds the agent's precision guard checks for its embedding model: its own decisions'
(matching, each door's) and the fleet server's cluster threshold, as its store holds it from the last
Register (facefleet.agent.fleet.sync records it; tests/agent/updates measure again at a new one)."""

from __future__ import annotations

from pathlib import Path

from facefleet.agent.cli.context import Context
from facefleet.agent.config import load_config
from facefleet.agent.service.loop import AgentService
from facefleet.agent.store.database import EmbeddingStore
from facefleet.vision.models.store import ModelStore


def test_the_guard_checks_the_servers_cluster_threshold_once_the_store_holds_it(
    tmp_path: Path, model_store: ModelStore
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "models").symlink_to(model_store.root, target_is_directory=True)
    config = tmp_path / "agent.toml"
    config.write_text(
        'device_id = "door-box"\n[mqtt]\nenabled = false\n[runtime]\ninference_precision = "f32"\n'
        f'[[cameras]]\nname = "door"\nsource = "{tmp_path}"\n'
        '[[doors]]\nname = "front"\ncamera = "door"\n'
    )
    service = AgentService(load_config(config), state)
    try:
        thresholds = service.precisions.thresholds
        assert thresholds("sface@2021dec") == (0.363, 0.5)  # matching, the door's
        with EmbeddingStore(state / "agent.db") as store:  # as the sync client records Register's
            store.sync.record_cluster_threshold(0.42)
        assert thresholds("sface@2021dec") == (0.363, 0.5, 0.42)
        # `models tune` and `import-defaults` guard at the same thresholds, so they share the agent's cache
        command = Context(config=load_config(config), state_dir=state)
        assert command.decision_thresholds("sface@2021dec") == (0.363, 0.5, 0.42)
    finally:
        service.store.close()
