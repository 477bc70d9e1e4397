from opcd.cli import main

raise SystemExit(main())
