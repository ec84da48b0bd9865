"""The message contract shared by all services: topic names and message models."""

from kredit_shared.contracts.messages import *  # noqa: F403
from kredit_shared.contracts.topics import *  # noqa: F403
