from fr_lib.cli import main
import sys
sys.exit(main())
