"""`python -m evroam`: the `evroam` command, for starting parties as child processes."""

from evroam.cli import main

main()
