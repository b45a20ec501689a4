module asset-sync/bench/simulator

go 1.22
