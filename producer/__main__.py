"""``python -m producer`` — same as the ``producer`` console script."""

from producer.cli import main

main()
