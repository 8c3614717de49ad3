from bench.flows import main

main()
