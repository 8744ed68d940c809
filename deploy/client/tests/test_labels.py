from credproxy_client import labels


def test_airflow_context_becomes_labels():
    env = {
        "AIRFLOW_CTX_DAG_ID": "daily_sales",
        "AIRFLOW_CTX_TASK_ID": "group.charges",
        "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-12-01T06:00:00.123456+00:00",
        "AIRFLOW_CTX_TRY_NUMBER": "3",
        "AIRFLOW_CTX_DAG_OWNER": "finance",
    }
    assert labels.airflow_labels(env) == {
        "dag_id": "daily_sales",
        "task_id": "group.charges",
        "run_id": "manual__2026-12-01T06:00:00.123456+00:00",
        "try_number": "3",
    }
    assert labels.airflow_labels({}) == {}


def test_values_are_sanitised_to_the_spec_charset_and_bounded():
    clean = labels.sanitise({"dag_id": "my dag, with \"quotes\"=x", "step": "é" * 200, "Bad-Key": "x", "job": None, "empty": "  "})
    assert clean == {"dag_id": "my_dag__with__quotes__x", "step": "_" * 128}
    # What the client sends always survives credproxy's parser (no `,` or `=` in values).
    assert labels.header_value({"a": "1,b=2"}) == "a=1_b_2"


def test_at_most_eight_pairs():
    many = {f"k{i}": str(i) for i in range(12)}
    assert list(labels.sanitise(many)) == [f"k{i}" for i in range(8)]
    assert labels.header_value({}) is None
