import sys

from labkit.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
