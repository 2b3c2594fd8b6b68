"""`python -m multi2cap` and `torchrun -m multi2cap train ...`: the same command as `multi2cap`."""

from multi2cap.cli.main import main

if __name__ == "__main__":
    main()
