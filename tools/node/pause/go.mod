module airflow-adaptive/pause

go 1.26
