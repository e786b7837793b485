"""Training entry point (``make train SCENARIO=...``). The learner is not built yet."""

import sys

if __name__ == "__main__":
    sys.exit(
        "training is not built yet: the environments are ready (see README), the Q-MARL learner "
        "is tracked in the learner issue. Try `make render SCENARIO=battle` meanwhile."
    )
