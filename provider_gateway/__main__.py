from provider_gateway.cli import main

main()
