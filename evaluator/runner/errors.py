"""Exit codes of the runner; the host maps any non-zero code to the coarse reason
"crashed" and keeps the stderr line for the site owner only."""

EXIT_OK = 0
EXIT_USAGE = 2  # argparse's own code for a bad command line
EXIT_INPUT = 3  # the features file could not be read
EXIT_LOAD = 4  # the model could not be loaded
EXIT_PREDICT = 5  # the model raised or returned something unusable
EXIT_OUTPUT = 6  # the predictions could not be written


class RunnerError(Exception):
    """A failure with the exit code the process should end with."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
