"""How fast the model answers on this machine, measured on the recent answers of this process:
what the note shown while an answer has not started yet estimates from."""

from __future__ import annotations

from dataclasses import dataclass

# Weight of the newest answer in the moving averages: recent answers count most (the machine's
# load changes), and one odd answer doesn't swing the estimate.
WEIGHT = 0.3


@dataclass
class Speed:
    """Moving averages of a model's recent answers."""

    first_token_s: float  # the wait for the first token (reading the prompt, queueing)
    writing_s: float  # the rest of the answer


class Pace:
    """Per model name (a promoted version may be slower than the base): its recent answers' speed."""

    def __init__(self) -> None:
        self._speeds: dict[str, Speed] = {}

    def record(self, model: str, first_token_s: float, total_s: float) -> None:
        writing_s = max(total_s - first_token_s, 0.0)
        known = self._speeds.get(model)
        if known is None:
            self._speeds[model] = Speed(first_token_s, writing_s)
            return
        known.first_token_s += WEIGHT * (first_token_s - known.first_token_s)
        known.writing_s += WEIGHT * (writing_s - known.writing_s)

    def note(self, model: str, others: int) -> str:
        """What the user reads while waiting for the first token; `others`: the answers this
        process is writing meanwhile (a server on a CPU writes them one at a time, or shares it)."""
        known = self._speeds.get(model)
        if known is None:
            text = "The model is starting: the first answer after a start can take a minute or more on this machine."
        else:
            total = max(round(known.first_token_s + known.writing_s), 1)
            first = max(round(known.first_token_s), 1)
            text = f"Answers take about {total} s on this machine (the first words after about {first} s)."
        if others:
            text += f" {others} other answer{'s are' if others > 1 else ' is'} being written at the moment."
        return text
