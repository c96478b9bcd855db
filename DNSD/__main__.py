"""`python -m DNSD ...` is the same command as `python DNSD/main.py ...`."""
import sys

from DNSD.main import main

sys.exit(main())
