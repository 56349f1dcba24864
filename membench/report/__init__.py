"""Reports: tables, figures and comparisons rendered from a leaderboard directory only
(never by re-running a model).

    tables    Tables 1 and 2, the every-run tables, summary files (`membench report`)
    figures   Fig. 3: rho and MSE against parameter counts
    compare   paired bootstrap over test images (`membench compare`)
    transfer  the cross-dataset transfer matrix
    ceilings  the human-consistency line of each dataset
"""
