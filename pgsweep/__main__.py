from pgsweep.cli import main

main()
