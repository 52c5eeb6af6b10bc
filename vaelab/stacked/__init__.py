"""A sweep's jobs of one shape trained together (`hydra/launcher=stacked`), each still its own run:
`stack` (parameters stacked along a member axis, one vmapped forward and backward for all),
`group` (the members' epochs, evaluation, reports and checkpoints), `plan` (which jobs share a stack)."""

from vaelab.stacked.group import Group
from vaelab.stacked.plan import group_jobs, grouping_line, stack_key
from vaelab.stacked.stack import Stack

__all__ = ["Group", "Stack", "group_jobs", "grouping_line", "stack_key"]
