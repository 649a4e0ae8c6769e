"""The server's durable state of model versions behind one interface: the catalogue of published models,
rollouts and how each stands on each device, and what agents report about their models.

Every change of the catalogue or of a rollout bumps `models_revision()` in the same transaction, so a server
process polling it notices changes another process (the CLI) made. All methods are blocking, one
transaction each; they raise NotFoundError, AlreadyExistsError, FailedPreconditionError or StateError.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from facefleet.link.models import ModelStatus
from facefleet.server.domain.models import (
    AgentModels,
    DeviceRollout,
    DeviceState,
    FailureAction,
    MaxFailures,
    PublishedModel,
    Rollout,
    RolloutState,
    Target,
)

Stop = Callable[[Rollout, Sequence[DeviceRollout]], Rollout]
"""A rollout and its device rows → the rollout as it should be (facefleet.server.rollouts.plan.stopped)."""


class ModelState(abc.ABC):
    @abc.abstractmethod
    def models_revision(self) -> int:
        """A counter that moves with every catalogue or rollout change (0 before the first)."""

    # -- catalogue -----------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_model(self, model: PublishedModel) -> PublishedModel:
        """Record a published model; the same id with the same files is a no-op (the stored record is
        returned), with other files or another task AlreadyExistsError."""

    @abc.abstractmethod
    def get_model(self, model_id: str) -> PublishedModel: ...

    @abc.abstractmethod
    def list_models(self) -> list[PublishedModel]:
        """Every published model (retired ones too), sorted by task then model id."""

    @abc.abstractmethod
    def retire_model(self, model_id: str, now: datetime) -> PublishedModel:
        """Retire a model: no new rollout, no download. FailedPreconditionError while a rollout that is
        not rolled back uses it."""

    # -- rollouts ------------------------------------------------------------------------------------

    @abc.abstractmethod
    def add_rollout(
        self,
        model_id: str,
        target: Target,
        state: RolloutState,
        now: datetime,
        *,
        max_failures: MaxFailures | None = None,
        on_failures: FailureAction = "pause",
    ) -> Rollout:
        """A new rollout of a published, not retired model (its task is the model's), with its failure
        budget (None: no limit)."""

    @abc.abstractmethod
    def get_rollout(self, rollout_id: int) -> Rollout: ...

    @abc.abstractmethod
    def list_rollouts(self) -> list[Rollout]:
        """Every rollout, newest first."""

    @abc.abstractmethod
    def change_rollout(self, rollout_id: int, change: Callable[[Rollout], Rollout]) -> Rollout:
        """Read a rollout, apply `change` (which may raise), store the result; one transaction."""

    @abc.abstractmethod
    def touch_rollout(self, rollout_id: int, now: datetime) -> bool:
        """A preparing rollout's sign of progress: set its updated_at to now, without moving the models
        revision (nothing changes for agents). False when the rollout is no longer preparing."""

    @abc.abstractmethod
    def device_rollouts(self, device_id: str) -> dict[int, DeviceRollout]:
        """The rollouts announced to a device, by rollout id."""

    @abc.abstractmethod
    def rollout_devices(self, rollout_id: int) -> list[DeviceRollout]:
        """The devices a rollout was announced to, sorted by device id."""

    @abc.abstractmethod
    def rollout_state_counts(self, rollout_ids: Sequence[int]) -> dict[int, dict[DeviceState, int]]:
        """How many devices of each rollout are in each state, by rollout id (a rollout announced to no
        device, or unknown, maps to {}), counted in the database."""

    @abc.abstractmethod
    def announce(self, device_id: str, announced: Sequence[tuple[int, str]], now: datetime) -> None:
        """Record (rollout_id, previous_model_id) as announced to the device, state 'assigned'; a rollout
        already announced to it keeps its row."""

    # -- agents --------------------------------------------------------------------------------------

    @abc.abstractmethod
    def set_agent_models(
        self,
        device_id: str,
        now: datetime,
        *,
        statuses: Sequence[ModelStatus] = (),
        groups: Sequence[str] | None = None,
        model_versions: Mapping[str, str] | None = None,
        model_precisions: Mapping[str, str] | None = None,
        stop: Stop | None = None,
    ) -> list[Rollout]:
        """Store an agent's latest status per task (and on its rows of the matching rollouts), its groups
        when given, and its active model ids and what they run at, by task, when given (each merged into
        what it registered).
        stop: called in the same transaction for each rollout a status refused (a final failure), with all
        its device rows; a changed result is stored. Returns the rollouts so changed."""

    @abc.abstractmethod
    def agent_models(self, device_ids: Sequence[str] = ()) -> dict[str, AgentModels]:
        """Groups and statuses of agents (all when device_ids is empty) by device id."""

    # -- gallery coverage ----------------------------------------------------------------------------

    @abc.abstractmethod
    def people_without_model(self, model_id: str) -> list[str]:
        """Ids of enrolled people with no embedding of model_id, sorted."""
