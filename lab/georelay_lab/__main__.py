from georelay_lab.cli import main

main()
