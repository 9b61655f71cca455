"""Tasks: data, model, loss and metric of each experiment, behind one ``Task`` interface (``base.py``).

``TASKS`` maps ``TrainConfig.task`` to the task class ``training.train`` runs; adding a task is
one new file with a ``Task`` subclass and one line here.
"""

from .base import Task
from .mnist import MnistTask
from .parser import ParseTask
from .pos import PosTask

__all__ = ["TASKS", "Task"]

TASKS: dict[str, type[Task]] = {
    "mnist": MnistTask,  # the MLP on MNIST (notebooks 01-06)
    "pos": PosTask,  # the BiLSTM tagger on UD English EWT (notebook 07)
    "parse": ParseTask,  # Chen & Manning's parser on UD English EWT (notebook 08)
}
