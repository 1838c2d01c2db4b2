import os
import sys

from .cli import main

code = main()
# The output is written and closed by now. Interpreter shutdown (module teardown, garbage
# collection, torch's thread pools) costs 0.3-0.5 s and can run vendor finalizers: skip it.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
