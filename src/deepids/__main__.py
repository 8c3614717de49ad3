from deepids.cli import main

main()
