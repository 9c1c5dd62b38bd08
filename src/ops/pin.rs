//! `lifeboat pin ID [--reason TEXT]` and `lifeboat unpin ID`: keep a backup
//! whatever the retention rules say (before a risky migration, say).

use anyhow::Result;

use super::{Context, find_backup};

pub fn pin(ctx: &Context, prefix: &str, reason: Option<String>) -> Result<String> {
    let (name, repo, id, rec) = find_backup(ctx, prefix)?;
    repo.pin(&id, reason)?;
    Ok(format!(
        "pinned backup {} of target {} ({}) in repository {name}: prune keeps it until `lifeboat unpin {}`",
        id.short(),
        rec.target,
        rec.started.format("%Y-%m-%d %H:%M:%S UTC"),
        id.short()
    ))
}

pub fn unpin(ctx: &Context, prefix: &str) -> Result<String> {
    let (name, repo, id, rec) = find_backup(ctx, prefix)?;
    Ok(if repo.unpin(&id)? {
        format!(
            "unpinned backup {} of target {} in repository {name}: its target's retention rules apply again",
            id.short(),
            rec.target
        )
    } else {
        format!("backup {} was not pinned", id.short())
    })
}
