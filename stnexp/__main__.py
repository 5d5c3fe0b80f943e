from stnexp.cli import main

main()
