"""The 7 TinyNLP and 9 GLUE tasks: what each one is, its labels and its metric.

Kept as data in code so that the registry works without the data files present."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    suite: str                 # "tinynlp" or "glue"
    type: str                  # "single" or "pair"
    label_names: tuple[str, ...]   # empty for regression
    metric: str                # accuracy | f1 | matthews | spearman

    @property
    def problem(self) -> str:
        return "regression" if not self.label_names else "classification"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) or 1


def _t(name, suite, type_, labels, metric):
    return Task(name, suite, type_, tuple(labels.split(",")) if labels else (), metric)


TASKS: dict[str, Task] = {t.name: t for t in [
    _t("imdb", "tinynlp", "single", "neg,pos", "accuracy"),
    _t("ag_news", "tinynlp", "single", "World,Sports,Business,Sci/Tech", "accuracy"),
    _t("cyberbullying", "tinynlp", "single",
       "age,ethnicity,gender,not_cyberbullying,other_cyberbullying,religion", "accuracy"),
    _t("limit", "tinynlp", "single", "no,yes", "accuracy"),
    _t("emotion", "tinynlp", "single", "sadness,joy,love,anger,fear,surprise", "accuracy"),
    _t("nlu", "tinynlp", "single",
       "alarm,audio,calendar,cooking,datetime,email,general,iot,lists,music,news,play,qa,"
       "recommendation,social,takeaway,transport,weather", "accuracy"),
    _t("snips", "tinynlp", "single",
       "AddToPlaylist,BookRestaurant,GetWeather,PlayMusic,RateBook,SearchCreativeWork,"
       "SearchScreeningEvent", "accuracy"),
    _t("cola", "glue", "single", "unacceptable,acceptable", "matthews"),
    _t("sst2", "glue", "single", "negative,positive", "accuracy"),
    _t("mrpc", "glue", "pair", "not_equivalent,equivalent", "f1"),
    _t("stsb", "glue", "pair", "", "spearman"),
    _t("qqp", "glue", "pair", "not_duplicate,duplicate", "f1"),
    _t("mnli", "glue", "pair", "entailment,neutral,contradiction", "accuracy"),
    _t("qnli", "glue", "pair", "entailment,not_entailment", "accuracy"),
    _t("rte", "glue", "pair", "entailment,not_entailment", "accuracy"),
    _t("wnli", "glue", "pair", "not_entailment,entailment", "accuracy"),
]}

TINYNLP = [n for n, t in TASKS.items() if t.suite == "tinynlp"]
GLUE = [n for n, t in TASKS.items() if t.suite == "glue"]


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
