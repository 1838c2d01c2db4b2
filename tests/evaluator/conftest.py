# The fake hub and the registered site data of the agent-loop tests, shared with other agent tests.
from tests.evaluator.test_agent_loop import data_dir, hub  # noqa: F401
