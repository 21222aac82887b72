from capnas.cli import main

main()
