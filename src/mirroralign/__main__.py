from mirroralign.cli import main

raise SystemExit(main())
