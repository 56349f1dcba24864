"""Built-in dataset plugins: lamem, lnsim, csv and the synthetic demo."""
