"""Why a run ran: the tag every automated or manual run carries."""

from enum import StrEnum

__all__ = ["TRIGGER_TAG", "Trigger"]

TRIGGER_TAG = "mlplatform/trigger"


class Trigger(StrEnum):
    """The reasons a run starts; the value is the ``mlplatform/trigger`` tag."""

    NEW_DATA = "new-data"
    SCHEDULE = "schedule"
    DRIFT = "drift"
    DECAY = "decay"
    MANUAL = "manual"

    def tags(self) -> dict[str, str]:
        """The run tags naming this trigger."""
        return {TRIGGER_TAG: self.value}
