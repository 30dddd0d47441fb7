"""``python -m edge``: the polyhead-edge command line."""

from edge.cli import main

if __name__ == "__main__":
    main(prog_name="polyhead-edge")
