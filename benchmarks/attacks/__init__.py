"""Attack replay: hostile vendor models, the vendor's view of a live hub, and one measurement per
channel (docs/disclosure.md; figures in BEFORE.md and AFTER.md).

``models`` builds ordinary ``python_package`` submissions that choose what they do from the
private features they are given; ``vendor_view`` and ``transcript`` are the only code that reads
the hub's vendor API; ``suite`` runs the experiments on a ``live`` deployment; ``bounds`` says
what differential privacy allows, to set the figures against.
"""
