"""TinyNLP and GLUE tasks: registry, loaders, metrics."""
from .registry import TASKS, TINYNLP, GLUE, Task, get_task
from .loader import DataError, Example, load_split, read_jsonl, find_data_dir
from .metrics import compute_metric

__all__ = ["TASKS", "TINYNLP", "GLUE", "Task", "get_task", "DataError", "Example",
           "load_split", "read_jsonl", "find_data_dir", "compute_metric"]
