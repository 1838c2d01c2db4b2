"""Exit codes of the runner. The host maps them to the contract's failure reasons
(``evaluator.sandbox.RUNNER_EXIT_REASONS``): a site keeps the reason and the stderr line for
its owner only, a vendor's dry run shows both to the model's author. Vendor code can exit with
any code it likes, so a code is a hint for people, never a security decision."""

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INPUT = 3  # the features file could not be read
EXIT_LOAD = 4  # the model's own code raised while loading ("crashed")
EXIT_PREDICT = 5  # the model raised while predicting ("crashed")
EXIT_OUTPUT = 6  # the predictions could not be written
EXIT_ARTIFACT = 7  # the artifact is not a model of its format ("invalid_artifact")
EXIT_CONTRACT = 8  # the model returned something the contract refuses ("invalid_output")


class RunnerError(Exception):
    """A failure with the exit code the process should end with."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class NotAModel(Exception):
    """The artifact cannot be read as a model of its declared format (garbage bytes, a pickle
    of something that cannot predict, a package without ``model.py``): ``invalid_artifact``."""
