"""Alias of :mod:`flow2gan.bin.pretrain` (the reference's ``train`` script; see :mod:`flow2gan.compat`)."""

from flow2gan.bin.pretrain import main

if __name__ == "__main__":
    raise SystemExit(main())
