from smearscope.cli import main

main()
