"""``imagefolder ablate``: the ImageFolder paper's ablation (arXiv 2410.01756), row by row, at a scale a CPU affords.

Modules: ``rows`` (the paper's eight rows and their numbers, and the CPU-scale recipe of each row, derived from the
demo's conv tokenizer recipe), ``run`` (``AblationSettings``, ``run_ablation``: shared data, judge and teacher once,
then per row tokenizer, codes, generator and evaluation, each row's results in its own file so a run resumes),
``table`` (the table with the paper's numbers beside ours, the paper's claims checked, the plot). The ImageNet
recipes of the eight rows are ``configs/ablation/row*.yaml``. ``AblationError``: what the command line reports as
a one-line error.
"""


class AblationError(Exception):
    """The ablation cannot go on (an unusable output folder, a row that does not run at this scale, an output
    folder made with other settings); the message says why."""
