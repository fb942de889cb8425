from aos.cli.main import main

raise SystemExit(main())
