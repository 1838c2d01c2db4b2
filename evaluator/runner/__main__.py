import os
import sys

from . import light_imports

# Before anything imports numpy or scipy: the hooks act as those modules are first imported.
light_imports.install()

from .cli import main  # noqa: E402

code = main()
# The output is written and closed by now. Interpreter shutdown (module teardown, garbage
# collection, torch's thread pools) costs 0.3-0.5 s and can run vendor finalizers: skip it.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
