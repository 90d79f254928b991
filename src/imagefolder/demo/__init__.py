"""``imagefolder demo``: the whole system on a CPU in minutes (data, judge, tokenizer, generator, samples, numbers).

Modules: ``recipes`` (model sizes and hyper-parameters, the one place to tune), ``training`` (the five training
stages and the time budget), ``evaluation`` (sampling, reconstruction, the numbers), ``plots`` (labelled grids and
curves drawn with PIL), ``report`` (metrics.json, report.md, the summary table), ``assets`` (the shipped model),
``pipeline`` (``DemoSettings``, ``run_demo``: tying them together). ``DemoError``: what the command line
reports as a one-line error.
"""


class DemoError(Exception):
    """The demo cannot go on (mismatched models and data, an unusable output folder, a dataset smaller than a
    batch); the message says why."""
