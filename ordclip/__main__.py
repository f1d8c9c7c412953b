from ordclip.cli import main

raise SystemExit(main())
