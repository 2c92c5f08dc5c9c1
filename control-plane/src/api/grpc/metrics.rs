//! The metrics rpcs: queries of a host's history and its top processes now.

use tonic::Status;
use zpanel_proto::{
    ListProcessesRequest, MetricPoint, MetricSeries, ProcessListing, QueryMetricsRequest,
    QueryMetricsResponse,
};

use crate::service::metrics::MetricsQuery;
use crate::service::{AppState, Principal};

pub async fn query(
    state: &AppState,
    principal: &Principal,
    body: QueryMetricsRequest,
) -> Result<QueryMetricsResponse, Status> {
    let query = MetricsQuery {
        host: body.host,
        metrics: body.metrics,
        since: body.since,
        until: body.until,
        step: i64::from(body.step),
    };
    let answer = state.query_metrics(principal, query).await?;
    Ok(QueryMetricsResponse {
        host_id: answer.host.id,
        host_name: answer.host.name,
        since: answer.since,
        until: answer.until,
        step: answer.step as u32,
        resolution: answer.resolution.name().into(),
        series: answer
            .series
            .into_iter()
            .map(|series| MetricSeries {
                metric: series.metric,
                instance: series.instance,
                points: series
                    .points
                    .into_iter()
                    .map(|p| MetricPoint {
                        at: p.at,
                        avg: p.avg,
                        min: p.min,
                        max: p.max,
                    })
                    .collect(),
            })
            .collect(),
    })
}

pub async fn processes(
    state: &AppState,
    principal: &Principal,
    body: ListProcessesRequest,
) -> Result<ProcessListing, Status> {
    let sort = body.sort();
    let (_, listing) = state
        .list_processes(principal, &body.host, sort, body.limit)
        .await?;
    Ok(listing)
}
