import os

from mirroralign.cli import main

if "TORCHELASTIC_ERROR_FILE" in os.environ:  # a torchrun worker: a rank's error goes into torchrun's failure summary
    from torch.distributed.elastic.multiprocessing.errors import record

    main = record(main)

raise SystemExit(main())
