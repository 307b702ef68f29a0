"""Tasks: what a training step, an evaluation and a report mean for one kind of problem.
The trainer (``fovea.train.loop``) owns everything else."""

from fovea.tasks.base import TASK_MODULES, TASKS, Task, get_task

__all__ = ["TASK_MODULES", "TASKS", "Task", "get_task"]
